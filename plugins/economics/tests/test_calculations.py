"""Every numeric final answer in the economics sample bank, recomputed from the question's data."""

from tutor.testing import check_calculations

RECOMPUTE = {
    # alevel-mcq, price-system: The price of a good rises from $8 to $10. As a result, the quantity de
    "dbe47813cf639f4c": {
        "PED": lambda: ((450 - 500) / 500 * 100) / ((10 - 8) / 8 * 100),
        "change in total revenue": lambda: 10 * 450 - 8 * 500,
    },
    # alevel-mcq, international-trade: The table shows the maximum output of wheat or cloth that each of two
    "a1218e0c74e8aa10": {
        "opportunity cost of cloth in X": lambda: 100 / 50,
        "opportunity cost of cloth in Y": lambda: 60 / 40,
    },
    # alevel-mcq, macroeconomics: In an economy the marginal propensity to save is 0.1, the marginal rat
    "745d86c2c11ad2b4": {
        "multiplier": lambda: 1 / (0.1 + 0.2 + 0.2),
        "change in national income": lambda: 1 / (0.1 + 0.2 + 0.2) * 200,
    },
    # alevel-data-response, development: Maluna: growth, investment and development Maluna is a lower-middle-in
    "144fe84ffcf1ef39": {
        "a": lambda: (5460 - 4200) / 4200 * 100,
    },
    # alevel-mcq, government-intervention: A specific tax of $3 per unit is imposed on a good. As a result, the e
    "82488baaabda76be": {
        "tax revenue": lambda: 3 * 800,
        "consumers' burden": lambda: (12 - 10) * 800,
    },
    # alevel-mcq, price-system: A profit-maximising firm in a perfectly competitive industry is produc
    "2c0223ea89578712": {
        "loss per unit": lambda: 10 - 8,
        "average fixed cost": lambda: 10 - 6,
    },
    # alevel-mcq, macroeconomics: In a country, nominal GDP rose from $500 billion in 2023 to $540 billi
    "1d03ad5c44363d79": {
        None: lambda: (540 / 104 * 100 - 500) / 500 * 100,
    },
    # alevel-mcq, international-trade: Between 2020 and 2024 the index of a country's export prices rose from
    "cff94b9dac579af6": {
        None: lambda: 110 / 125 * 100,
    },
    # igcse-mcq, macroeconomics: A country's consumer prices index (CPI) rose from 120 in 2023 to 126 i
    "f3f8599daf6d19e7": {
        None: lambda: (126 - 120) / 120 * 100,
    },
    # igcse-mcq, development: A country has 40 million people aged 15 to 64, 16 million aged under 1
    "73816fe5a3b1847c": {
        None: lambda: (16 + 4) / 40 * 100,
    },
    # igcse-mcq, price-system: The price of a bus ticket rises from $5.00 to $6.00. As a result, the
    "ecbaa4cb45e2f227": {
        None: lambda: ((900 - 1200) / 1200 * 100) / ((6 - 5) / 5 * 100),
    },
    # igcse-2, international-trade: In 2024 a country exported goods worth $40 billion and imported goods
    "b5bede7dab772a4e": {
        None: lambda: 40 - 46,
    },
    # igcse-2, macroeconomics: A country's labour force is 25 million people, of whom 1.5 million are
    "9b3c19bdf61e0b38": {
        None: lambda: 1.5 / 25 * 100,
    },
    # igcse-4, price-system: A bakery sells 2,000 loaves a week at a price of $1.50 each. Its fixed
    "352a050e8030f2e6": {
        "a": lambda: 1.50 * 2000 - (800 + 0.90 * 2000),
        "b": lambda: 800 / 2000,
    },
    # alevel-data-response, price-system: Electric scooters in Vantara Electric scooters have become a popular w
    "9971b9b9a2a40649": {
        "a": lambda: 640 * 6500 - 800 * 5000,
        "b": lambda: ((6500 - 5000) / 5000 * 100) / ((640 - 800) / 800 * 100),
        "d": lambda: -3 / ((640 - 800) / 800 * 100),
    },
    # alevel-data-response, macroeconomics: Verdania: inflation and interest rates Verdania is a medium-sized econ
    "aeede3567510a889": {
        "a": lambda: (120.4 - 112.0) / 112.0 * 100,
        "b": lambda: (1 + 4.0 / 100) / (1 + (120.4 - 112.0) / 112.0) * 100 - 100,
    },
    # alevel-data-response, international-trade: A tariff on steel in Kestria Kestria's steel industry has been losing
    "0eea22f64a856c9f": {
        "a": lambda: 0.20 * 500 * 4.0,
        "b": lambda: (4.0 - 6.0) / 6.0 * 100,
        "c:producer surplus gain": lambda: 0.20 * 500 * (4.0 + 5.0) / 2,
        "c:consumer surplus loss": lambda: 0.20 * 500 * (9.0 + 10.0) / 2,
    },
}


def test_every_final_answer_recomputes():
    assert check_calculations("economics", RECOMPUTE) == 29


# Figures that gold answers compute inside level-marked "discuss" parts. They are
# not final answers (such a part is marked with levels, not marking points, so it
# cannot carry one), but the tutor imitates them, so they are recomputed here:
# (text as written in the gold answer, the number in it, its significant figures,
# the recomputation).
DISCUSSION_FIGURES = {
    # electric scooters (e): cost of the subsidy at 2024 sales
    "9971b9b9a2a40649": [("$650,000", 650000, 2, lambda: 100 * 6500)],
    # Verdania (e): inflation in 2024
    "aeede3567510a889": [("= 3.0%", 3.0, 2, lambda: (124.0 - 120.4) / 120.4 * 100)],
    # Kestria (e): net welfare loss ($ million) and consumers' cost per steel job ($)
    "0eea22f64a856c9f": [
        ("net welfare loss of $100 million", 100, 3,
         lambda: 0.20 * 500 * (9.0 + 10.0) / 2 - 0.20 * 500 * (4.0 + 5.0) / 2 - 0.20 * 500 * 4.0),
        ("= $158,000", 158000, 3, lambda: 0.20 * 500 * (9.0 + 10.0) / 2 * 1e6 / (46000 - 40000)),
    ],
}


def test_discussion_figures_recompute():
    from tutor.bank import load_bank
    from tutor.default_plugins.evaluators import agrees
    from tutor.registry import get_subject

    kit = get_subject("economics")
    bank = load_bank(kit, kit.subject.bank, require_answers=True)
    for qid, figures in DISCUSSION_FIGURES.items():
        gold = bank.answers_to(qid)[0].text
        for written, shown, sig_figs, recompute in figures:
            assert written in gold, f"{qid}: {written!r} is not in the gold answer"
            assert agrees(recompute(), shown, sig_figs), f"{qid}: {written!r}, but recomputed {recompute():.6g}"
