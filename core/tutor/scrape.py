"""Scraping question-bank sites, politely and resumably.

A site is described by a small TOML file (SiteConfig): where to start, which
CSS selectors hold the stem, options, key, parts and mark scheme, how to find
the next page, and whether pages need a real browser (JavaScript, logins).
The generic adapter turns that into question records; a site that needs code
registers its own question source through the `register_sources` hook and
uses the same Session (docs/collecting.md).

The Session is the only way out to the network:
  - robots.txt is read first, with a timeout; 5xx or no answer means "do not
    crawl" (RFC 9309), 4xx means no rules;
  - at least `delay` seconds (1 s by default) between requests to one host, counted from the end of the last one;
  - 429 and 5xx are retried with exponential backoff, honouring Retry-After;
  - every page is cached on disk once fetched, so after a crash or Ctrl-C a
    re-run reads collected pages from disk and fetches only the rest;
  - credentials are read from environment variables at login and never
    written anywhere.
Selenium drives Debian's headless Chromium for pages that need it;
BeautifulSoup turns HTML into clean text (html_to_text).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import urllib.robotparser
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import TutorError
from .jsonl import append_lines, iter_dicts, repair_tail
from .llm_client import retry_after

USER_AGENT = "tutor-collect/0.1 (+question bank import; honours robots.txt)"


class ScrapeError(TutorError):
    """The site cannot be scraped as configured (robots.txt, login, timeouts)."""


# --- configuration -------------------------------------------------------------------------


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(_Config):
    url: str = Field(description="The login page.")
    username_field: str = Field(description="CSS selector of the user-name input.")
    password_field: str = Field(description="CSS selector of the password input.")
    submit: str = Field(description="CSS selector of the submit button.")
    username_env: str = Field(description="Environment variable holding the user name.")
    password_env: str = Field(description="Environment variable holding the password.")
    success: str | None = Field(default=None, description="CSS selector present only once logged in.")


class Selectors(_Config):
    question: str = Field(description="Each question's block on a list page.")
    stem: str
    option: str | None = Field(default=None, description="MCQ options, in order A, B, C...")
    key: str | None = Field(default=None, description="The correct option's letter (or the option marked correct).")
    key_attribute: str | None = Field(default=None, description="Read the key from this attribute of the key element.")
    marks: str | None = None
    topic: str | None = None
    part: str | None = Field(default=None, description="Each part of a structured question.")
    part_label: str | None = None
    part_text: str | None = None
    part_marks: str | None = None
    mark_point: str | None = Field(default=None, description="Each marking point; a [n] or 'n marks' suffix gives its marks.")
    mark_point_part: str | None = Field(default=None, description="Attribute naming the part a marking point belongs to.")
    image: str | None = Field(default="img", description="Images the question refers to, downloaded beside the bank.")
    next: str | None = Field(default=None, description="The link to the next page of the list.")


class SiteConfig(_Config):
    """A question-bank site, as a scrape TOML file describes it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$", description="Names the cache folder and the questions' source.")
    start: str = Field(description="URL of the first list page.")
    adapter: str = Field(default="site", description="The question source that reads the pages: 'site' (selectors below) or a plugin's.")
    browser: bool = Field(default=False, description="Render pages in headless Chromium (JavaScript lists, logins).")
    wait_for: str | None = Field(default=None, description="With browser: wait until this selector is present.")
    delay: float = Field(default=1.0, ge=0, description="Seconds between requests to one host.")
    timeout: float = Field(default=20.0, gt=0, description="Seconds before a page (or robots.txt) counts as not answering.")
    retries: int = Field(default=3, ge=0)
    max_pages: int = Field(default=1000, ge=1)
    login: Login | None = None
    selectors: Selectors | None = Field(default=None, description="For the 'site' adapter: where each field is on a page.")
    defaults: dict[str, object] = Field(default_factory=dict, description="Field values the pages lack, e.g. type.")

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        try:
            return cls.model_validate(tomllib.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ScrapeError(f"{path}: {err}") from None
        except ValidationError as err:
            first = err.errors()[0]
            raise ScrapeError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


# --- HTML to clean text ----------------------------------------------------------------------

_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d])", re.IGNORECASE)


def html_to_text(element) -> str:
    """Visible text of a BeautifulSoup element, with mathematics kept.

    Scripts, styles, comments and hidden elements go (a hidden "ignore previous
    instructions" is data meant for a model, not for a student); MathJax and
    MathML become $LaTeX$; <sup>/<sub> become ^ and _ as the banks write units.
    """
    from bs4 import BeautifulSoup, Comment

    soup = BeautifulSoup(str(element), "html.parser")
    for script in soup.select('script[type^="math/tex"]'):
        script.replace_with(f"${script.get_text()}$")
    for math in soup.find_all("math"):
        tex = math.find("annotation", attrs={"encoding": "application/x-tex"})
        math.replace_with(f"${tex.get_text().strip() if tex else math.get('alttext') or math.get_text(' ', strip=True)}$")
    for node in soup(["script", "style", "noscript", "template", "head", "iframe", "object"]):
        node.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for node in soup.find_all(True):
        if node.decomposed:
            continue
        if node.has_attr("hidden") or node.get("aria-hidden") == "true" or _HIDDEN_STYLE.search(node.get("style", "")):
            node.decompose()
    for sup in soup.find_all("sup"):
        sup.replace_with(f"^{sup.get_text()}")
    for sub in soup.find_all("sub"):
        sub.replace_with(f"_{sub.get_text()}")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for block in soup.find_all(["p", "div", "li", "tr", "h1", "h2", "h3", "h4"]):
        block.insert_after("\n")
    text = soup.get_text()
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip()


# --- the session: robots, politeness, retries, cache, browser ---------------------------------


@dataclass
class Session:
    config: SiteConfig
    cache_dir: Path  # <workspace>/<subject>/scrape/<site>/
    requests: int = 0
    from_cache: int = 0
    _robots: dict[str, urllib.robotparser.RobotFileParser] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)
    _driver: object = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        (self.cache_dir / "pages").mkdir(parents=True, exist_ok=True)
        self.index_path = self.cache_dir / "pages.jsonl"
        self._index = {}
        repair_tail(self.index_path)  # a torn last line from a crash: that page is fetched again
        for _, entry in iter_dicts(self.index_path):
            if "url" in entry:
                self._index[entry["url"]] = entry

    # Pages ----------------------------------------------------------------------------------

    def page(self, url: str) -> tuple[str, datetime]:
        """The HTML of a page and when it was collected: from the cache, else from the site."""
        if url in self._index:
            entry = self._index[url]
            self.from_cache += 1
            return (self.cache_dir / "pages" / entry["file"]).read_text(encoding="utf-8"), datetime.fromisoformat(entry["collected_at"])
        html = self._render(url) if self.config.browser else self._get(url).decode("utf-8", errors="replace")
        return html, self._remember(url, html)

    def download(self, url: str, target_dir: Path) -> Path:
        """A file the questions refer to (an image), saved once under `target_dir`."""
        name = hashlib.sha256(url.encode()).hexdigest()[:16] + (Path(urllib.parse.urlparse(url).path).suffix or ".bin")
        target = target_dir / name
        if not target.exists():
            data = self._get(url)
            target_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return target

    def _remember(self, url: str, html: str) -> datetime:
        collected = datetime.now(timezone.utc)
        name = hashlib.sha256(url.encode()).hexdigest()[:20] + ".html"
        tmp = self.cache_dir / "pages" / (name + ".part")
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, self.cache_dir / "pages" / name)
        entry = {"url": url, "file": name, "collected_at": collected.isoformat()}
        append_lines(self.index_path, [json.dumps(entry)])
        self._index[url] = entry
        return collected

    # Politeness ----------------------------------------------------------------------------

    def allowed(self, url: str) -> bool:
        parts = urllib.parse.urlparse(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
        return self._robots[origin].can_fetch(USER_AGENT, url)

    def _read_robots(self, origin: str) -> urllib.robotparser.RobotFileParser:
        robots = urllib.robotparser.RobotFileParser(origin + "/robots.txt")
        try:
            self._wait_turn(origin)
            request = urllib.request.Request(origin + "/robots.txt", headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                robots.parse(response.read().decode("utf-8", errors="replace").splitlines())
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise ScrapeError(f"{origin}/robots.txt answered {err.code}: the site cannot say what may be crawled, "
                                  "so nothing is (RFC 9309); try later") from None
            robots.parse([])  # 4xx: no rules, everything allowed
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ScrapeError(f"{origin}/robots.txt did not answer within {self.config.timeout:g} s ({reason}); "
                              "nothing was crawled") from None
        return robots

    def _wait_turn(self, host: str) -> None:
        with self._lock:
            wait = self._last.get(host, 0.0) + self.config.delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last[host] = time.monotonic()

    def _finished(self, host: str) -> None:
        """The delay counts from the end of a request too: a request that reached the site late (a slow connect)
        must not let the next one arrive sooner than `delay` after it."""
        with self._lock:
            self._last[host] = max(self._last.get(host, 0.0), time.monotonic())

    def _get(self, url: str) -> bytes:
        if not self.allowed(url):
            raise ScrapeError(f"{url} is disallowed by robots.txt")
        host = urllib.parse.urlparse(url)
        origin = f"{host.scheme}://{host.netloc}"
        for attempt in range(self.config.retries + 1):
            self._wait_turn(origin)
            self.requests += 1
            try:
                request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **self._cookie_header()})
                with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as err:
                if (err.code == 429 or err.code >= 500) and attempt < self.config.retries:
                    time.sleep(_pause(err.headers, attempt))
                    continue
                raise ScrapeError(f"{url} answered {err.code} {err.reason}" + (f" after {attempt + 1} tries" if attempt else "")) from None
            except (urllib.error.URLError, TimeoutError, OSError) as err:
                raise ScrapeError(f"{url} did not answer within {self.config.timeout:g} s ({getattr(err, 'reason', err)})") from None
            finally:
                self._finished(origin)
        raise AssertionError("unreachable")

    # The browser ------------------------------------------------------------------------------

    def _render(self, url: str) -> str:
        if not self.allowed(url):
            raise ScrapeError(f"{url} is disallowed by robots.txt")
        from selenium.common.exceptions import TimeoutException, WebDriverException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        driver = self.browser()
        host = urllib.parse.urlparse(url)
        self._wait_turn(f"{host.scheme}://{host.netloc}")
        self.requests += 1
        try:
            driver.get(url)
            if self.config.wait_for:
                present = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, self.config.wait_for))
                WebDriverWait(driver, self.config.timeout).until(present)
        except TimeoutException:
            raise ScrapeError(f"{url} did not finish loading within {self.config.timeout:g} s") from None
        except WebDriverException as err:
            raise ScrapeError(f"{url}: the browser failed: {err.msg}") from None
        return driver.page_source

    def browser(self):
        """Headless Debian Chromium, started on first use, logged in if the site needs it."""
        if self._driver is None:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service

            options = webdriver.ChromeOptions()
            options.binary_location = _which("chromium", "chromium")
            # No background traffic: the machine's network is closed, and a scraper should only fetch what it means to.
            for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
                         f"--user-agent={USER_AGENT}"):
                options.add_argument(flag)
            service = Service(executable_path=_which("chromedriver", "chromium-driver"))
            self._driver = webdriver.Chrome(options=options, service=service)
            self._driver.set_page_load_timeout(self.config.timeout)
            if self.config.login:
                self._log_in()
        return self._driver

    def _log_in(self) -> None:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        login = self.config.login
        missing = [name for name in (login.username_env, login.password_env) if not os.environ.get(name)]
        if missing:
            raise ScrapeError(f"the site needs a login: set the environment variable(s) {', '.join(missing)}")
        driver = self._driver
        try:
            driver.get(login.url)
            driver.find_element(By.CSS_SELECTOR, login.username_field).send_keys(os.environ[login.username_env])
            driver.find_element(By.CSS_SELECTOR, login.password_field).send_keys(os.environ[login.password_env])
            driver.find_element(By.CSS_SELECTOR, login.submit).click()
            if login.success:
                present = expected_conditions.presence_of_element_located((By.CSS_SELECTOR, login.success))
                WebDriverWait(driver, self.config.timeout).until(present)
        except TimeoutException:
            # Never echo the credentials: only say that they were refused.
            raise ScrapeError(f"login at {login.url} failed: check {login.username_env} and {login.password_env}") from None

    def _cookie_header(self) -> dict[str, str]:
        if self._driver is None:
            return {}
        cookies = "; ".join(f"{c['name']}={c['value']}" for c in self._driver.get_cookies())
        return {"Cookie": cookies} if cookies else {}

    def close(self) -> None:
        if self._driver is not None:
            self._driver.quit()
            self._driver = None


def _pause(headers, attempt: int) -> float:
    """Seconds to wait before retry `attempt`: what the server's Retry-After asks (capped), else a backoff."""
    asked = retry_after(headers)
    return min(asked, 120.0) if asked is not None else min(2.0 ** attempt, 30.0)


def _which(program: str, package: str) -> str:
    import shutil

    found = shutil.which(program)
    if not found:
        raise ScrapeError(f"{program} is missing: install the Debian package {package} (./run.sh installs it)")
    return found


# --- the generic adapter ----------------------------------------------------------------------


def scrape_site(location: str, session: Session, images_dir: Path) -> Iterator[tuple[str, dict]]:
    """The generic adapter: question records from every list page, following next links.

    MCQ lists (option, key) and structured questions (part, mark_point) alike,
    as the site file's selectors say.
    """
    from bs4 import BeautifulSoup

    config, selectors = session.config, session.config.selectors
    if selectors is None:
        raise ScrapeError(f"site {config.name!r}: the 'site' adapter needs a [selectors] table")
    url: str | None = location
    visited: set[str] = set()
    while url and url not in visited and len(visited) < config.max_pages:
        visited.add(url)
        html, collected = session.page(url)
        soup = BeautifulSoup(html, "html.parser")
        for number, block in enumerate(soup.select(selectors.question), start=1):
            record = _record(block, selectors, config, url)
            for src in record.pop("__images__", []):
                try:
                    saved = session.download(urllib.parse.urljoin(url, src), images_dir)
                    record.setdefault("images", []).append(str(saved.relative_to(images_dir.parent)))
                except ScrapeError as err:
                    record["__error__"] = f"image {src}: {err}"
            record["__source__"] = {"name": config.name, "url": f"{url}#{number}", "collected_at": collected.isoformat()}
            yield f"{url}#{number}", record
        link = soup.select_one(selectors.next) if selectors.next else None
        url = urllib.parse.urljoin(url, link["href"]) if link and link.get("href") else None


def _record(block, s: Selectors, config: SiteConfig, url: str) -> dict:
    def text(selector, within=block):
        found = within.select_one(selector) if selector else None
        return html_to_text(found) if found else ""

    record: dict = {"stem": text(s.stem)}
    if s.topic and (topic := text(s.topic)):
        record["topic"] = topic
    if s.marks and (marks := text(s.marks)):
        record["marks"] = marks
    if s.option:
        record["options"] = {chr(65 + i): html_to_text(o) for i, o in enumerate(block.select(s.option))}
    if s.key:
        key = block.select_one(s.key)
        if key is not None:
            record["key"] = key.get(s.key_attribute, "") if s.key_attribute else html_to_text(key)
    if s.part:
        parts = []
        for i, part in enumerate(block.select(s.part)):
            label = text(s.part_label, part).strip("() ") or chr(97 + i)
            marks = re.search(r"\d+", text(s.part_marks, part) or "")
            wording = text(s.part_text, part) if s.part_text else html_to_text(part)
            parts.append({"label": label, "text": wording, "marks": int(marks.group()) if marks else 0})
        record["parts"] = json.dumps(parts)
    if s.mark_point:
        points = []
        for point in block.select(s.mark_point):
            item = html_to_text(point)
            marks = re.search(r"\[(\d+)\]\s*$|\((\d+) marks?\)\s*$", item)
            entry = {"text": item[: marks.start()].strip() if marks else item}
            if marks:
                entry["marks"] = int(marks.group(1) or marks.group(2))
            if s.mark_point_part and point.get(s.mark_point_part):
                entry["part"] = point[s.mark_point_part]
            points.append(entry)
        record["mark_scheme"] = json.dumps({"points": points})
    if s.image:
        record["__images__"] = [img["src"] for img in block.select(s.image) if img.get("src")]
    return record
