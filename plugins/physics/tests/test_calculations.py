"""Every final answer of the physics sample bank, recomputed from the question's own data.

Each lambda writes out the numbers of the stem (and the data constants of the
syllabus: g, e, h, c, m_e, N_A, R, k, u) so that a slip in a gold answer, in its
final_answers record or in its mark scheme fails here.
"""

from math import asin, cos, degrees, exp, log, pi, radians, sin, sqrt

from tutor.testing import check_calculations

RECOMPUTE = {
    # alevel-mcq, quantum: Electromagnetic radiation of wavelength 250 nm is incident o
    "ffdfbe3043762e38": {
        None: lambda: 6.63e-34 * 3.00e8 / 250e-9 - 3.2 * 1.60e-19,
    },
    # alevel-mcq, fields: Two parallel metal plates are 4.0 mm apart in a vacuum. The
    "63815c511f22edbd": {
        None: lambda: 1.60e-19 * 600 / 4.0e-3,
    },
    # alevel-mcq, nuclear: A nucleus of uranium-238 (nucleon number 238, proton number
    "7c8bf989c5d3db28": {
        "nucleon number": lambda: 238 - 4,
        "proton number": lambda: 92 - 2 + 2 * 1,
    },
    # igcse-mcq, waves: A sound wave in air has a frequency of 1700 Hz and a wavelen
    "872f0f7a8670cf69": {
        None: lambda: 1700 * 0.20,
    },
    # igcse-mcq, electricity: A 4.0 Ω resistor and a 12 Ω resistor are connected in parall
    "50c72ddeebdf8922": {
        None: lambda: 1 / (1 / 4.0 + 1 / 12),
    },
    # alevel-structured, waves: A horizontal string is attached at one end to a vibration ge
    "02e6666c8c25647a": {
        "c:λ": lambda: 2 * 0.90 / 3,
        "c:v": lambda: 120 * 2 * 0.90 / 3,
    },
    # alevel-structured, electricity: A battery of electromotive force (e.m.f.) 9.0 V and negligib
    "801a4b9584f15043": {
        "c": lambda: 9.0 * 4.0e3 / (2.0e3 + 4.0e3),
    },
    # alevel-structured, fields: A satellite of mass m is in a circular orbit of radius r abo
    "19fa1064de0482ab": {
        "c": lambda: (6.67e-11 * 5.98e24 * (24 * 3600) ** 2 / (4 * pi ** 2)) ** (1 / 3),
    },
    # alevel-structured, thermal: A fixed mass of an ideal gas is compressed at a constant pre
    "1ff7f97d7f4567a8": {
        "c(i)": lambda: 1.5e5 * (2.4e-3 - 1.6e-3),
        "c(ii)": lambda: -300 + 1.5e5 * (2.4e-3 - 1.6e-3),
    },
    # alevel-calculation, mechanics: A ball is kicked from ground level with an initial velocity
    "7e3f4534194a9828": {
        "a:horizontal": lambda: 18 * cos(radians(35)),
        "a:vertical": lambda: 18 * sin(radians(35)),
        "b": lambda: (18 * sin(radians(35))) ** 2 / (2 * 9.81),
        "c": lambda: 2 * 18 * sin(radians(35)) / 9.81,
        "d": lambda: 18 * cos(radians(35)) * 2 * 18 * sin(radians(35)) / 9.81,
    },
    # alevel-calculation, electricity: A battery of e.m.f. 6.0 V and internal resistance r is conne
    "e1c7c8849ba476b9": {
        "a": lambda: 1.1 * 5.0,
        "b": lambda: (6.0 - 1.1 * 5.0) / 1.1,
        "c": lambda: (1.1 ** 2 * 5.0) / (6.0 * 1.1),
    },
    # alevel-calculation, nuclear: Iodine-131 is a radioactive isotope with a half-life of 8.0
    "9a2752984779301d": {
        "a": lambda: log(2) / (8.0 * 24 * 3600),
        "b": lambda: 5.0e8 / (log(2) / (8.0 * 24 * 3600)),
        "c": lambda: 5.0e8 / (log(2) / (8.0 * 24 * 3600)) / 6.02e23 * 0.131,
        "d": lambda: 5.0e8 * exp(-log(2) * 20 / 8.0),
    },
    # alevel-calculation, quantum: Electrons, initially at rest, are accelerated in a vacuum th
    "41fefe85161c1450": {
        "a": lambda: 1.60e-19 * 150,
        "b": lambda: sqrt(2 * 9.11e-31 * 1.60e-19 * 150),
        "c": lambda: 6.63e-34 / sqrt(2 * 9.11e-31 * 1.60e-19 * 150),
    },
    # alevel-calculation, materials: A steel wire of length 2.50 m and diameter 0.50 mm hangs ver
    "c154c3544b401efe": {
        "a": lambda: pi * (0.50e-3) ** 2 / 4,
        "b": lambda: 40 / (pi * (0.50e-3) ** 2 / 4),
        "c": lambda: (40 / (pi * (0.50e-3) ** 2 / 4)) / (2.6e-3 / 2.50),
        "d": lambda: 0.5 * 40 * 2.6e-3,
    },
    # igcse-structured, waves: A ray of red light travels in air and strikes the top surfac
    "f536347c0fda798a": {
        "b": lambda: sin(radians(40)) / sin(radians(25)),
        "c": lambda: degrees(asin(sin(radians(25)) / sin(radians(40)))),
    },
    # igcse-structured, fields: A transformer is used to step down the 230 V a.c. mains supp
    "1c92e4cda920bfaa": {
        "b": lambda: 4600 * 12 / 230,
        "c": lambda: 12 * 2.0 / 230,
    },
    # igcse-structured, nuclear: A teacher uses a sealed radioactive source and a detector co
    "3db21cd6a7de5a2d": {
        "c": lambda: 36 / log(640 / 80, 2),
    },
    # igcse-calculation, mechanics: A car of mass 1200 kg accelerates uniformly from rest to a s
    "9b5a3912bc8b4318": {
        "a": lambda: (18 - 0) / 6.0,
        "b": lambda: 1200 * 18 / 6.0,
        "c": lambda: (0 + 18) / 2 * 6.0,
        "d": lambda: 0.5 * 1200 * 18 ** 2,
    },
    # igcse-calculation, thermal: A block of aluminium of mass 1.0 kg is heated by a 48 W elec
    "be590e270f1e2ccc": {
        "a": lambda: 48 * 5.0 * 60,
        "b": lambda: 48 * 5.0 * 60 / (1.0 * (35 - 20)),
    },
    # igcse-calculation, mechanics: A uniform plank of weight 200 N and length 4.0 m rests on a
    "45887223b571f890": {
        "b": lambda: 300 * 1.2 / 400,
        "c": lambda: 200 + 300 + 400,
    },
    # igcse-practical, materials: A student investigates how the extension of a spring depends
    "2fbca5ec2dcd6348": {
        "c": lambda: (36 - 4) / (4.5 - 0.5),
        "d": lambda: 1 / ((36 - 4) / (4.5 - 0.5) * 1e-3),
    },
    # igcse-practical, electricity: A student investigates how the resistance R of a resistance
    "807ba19417937db9": {
        "b:l = 0.20 m": lambda: 1.48 / 1.50,
        "b:l = 0.40 m": lambda: 2.01 / 0.99,
        "b:l = 0.60 m": lambda: 2.24 / 0.76,
        "b:l = 0.80 m": lambda: 2.42 / 0.60,
    },
    # alevel-mcq, mechanics: A ball of mass 0.15 kg moves horizontally at 12 m s^-1 towar
    "49bb49266313c16e": {
        None: lambda: 0.15 * (8.0 - (-12)) / 0.050,
    },
    # alevel-mcq, waves: A source of sound emits a note of frequency 600 Hz. The sour
    "2da1ec528811676f": {
        None: lambda: 600 * 330 / (330 - 30),
    },
    # alevel-mcq, electricity: Two wires P and Q are made of the same metal and are at the
    "3128c9b3599a0b08": {
        None: lambda: (2 * 1.0) / (2 * 1.0) ** 2,
    },
    # alevel-mcq, thermal: A fixed mass of an ideal gas is in a sealed container of con
    "648a240b24e5d740": {
        None: lambda: (327 + 273) / (27 + 273),
    },
    # alevel-mcq, quantum: An electron in a hydrogen atom makes a transition from the e
    "ae1194612133c4fa": {
        None: lambda: 6.63e-34 * 3.00e8 / ((3.40 - 1.51) * 1.60e-19) * 1e9,
    },
    # alevel-mcq, materials: A spring obeys Hooke's law and has a spring constant of 200
    "05b0a7e8c1981008": {
        None: lambda: 0.5 * 200 * (0.060 ** 2 - 0.040 ** 2),
    },
    # igcse-mcq, mechanics: A rock has a mass of 5.0 kg on the Earth. An astronaut takes
    "0b5ad7fbf34cc6c5": {
        None: lambda: 5.0 * 1.6,
    },
    # igcse-mcq, materials: A rectangular block of weight 40 N rests on a horizontal flo
    "09d982f172e3e289": {
        None: lambda: 40 / (0.20 * 0.10),
    },
    # igcse-mcq, electricity: There is a current of 0.50 A in a lamp for 2.0 minutes.
    "fb16ed90e7069b86": {
        None: lambda: 0.50 * 2.0 * 60,
    },
    # igcse-mcq, nuclear: A radioactive sample has an activity of 800 Bq. The half-lif
    "4133d952911bd1e7": {
        None: lambda: 800 * 0.5 ** (6.0 / 2.0),
    },
    # alevel-structured, mechanics: A uniform beam AB of length 2.0 m and weight 150 N is attach
    "bfa3b7829f26d7da": {
        "c": lambda: (150 * 1.0 + 90 * 1.5) / (sin(radians(30)) * 2.0),
        "d": lambda: sqrt(((150 * 1.0 + 90 * 1.5) / (sin(radians(30)) * 2.0) * cos(radians(30))) ** 2
                          + (150 + 90 - (150 * 1.0 + 90 * 1.5) / 2.0) ** 2),
    },
    # alevel-structured, materials: A copper wire and a glass fibre are each stretched by increa
    "58036fef2f39c49d": {
        "c": lambda: 20 * 1.80 / (1.2e-7 * 1.2e11),
        "d": lambda: 0.5 * 20 * 20 * 1.80 / (1.2e-7 * 1.2e11),
    },
    # alevel-structured, nuclear: A nucleus of helium-4 consists of 2 protons and 2 neutrons.
    "d52defec0542d6ab": {
        "b(i)": lambda: (2 * 1.00728 + 2 * 1.00867 - 4.00150) * 1.66e-27,
        "b(ii)": lambda: (2 * 1.00728 + 2 * 1.00867 - 4.00150) * 1.66e-27 * (3.00e8) ** 2 / 1.60e-13 / 4,
    },
    # alevel-structured, quantum: Some of the energy levels of an electron in an atom of a gas
    "c35802deee493c8a": {
        "c": lambda: 6.63e-34 * 3.00e8 / ((5.5 - 3.7) * 1.60e-19),
    },
    # alevel-calculation, waves: A diffraction grating has 450 lines per millimetre. A parall
    "8b7133964b36531c": {
        "a": lambda: 1 / 450e3,
        "b": lambda: 1 / 450e3 * sin(radians(15.4)),
        "c": lambda: int((1 / 450e3) / (1 / 450e3 * sin(radians(15.4)))),
        "d": lambda: degrees(asin(3 * sin(radians(15.4)))),
    },
    # alevel-calculation, fields: An oil drop of mass 4.89 × 10^-15 kg is between two horizont
    "b9fc08c80c1ad353": {
        "a": lambda: 600 / 12e-3,
        "b": lambda: 4.89e-15 * 9.81 / (600 / 12e-3),
        "c": lambda: round(4.89e-15 * 9.81 / (600 / 12e-3) / 1.60e-19),
        "d": lambda: (4.89e-15 * 9.81 / (600 / 12e-3) * 750 / 12e-3 - 4.89e-15 * 9.81) / 4.89e-15,
    },
    # alevel-calculation, thermal: A cylinder of volume 0.0500 m^3 contains helium gas at a pre
    "9a20618c78d1e26e": {
        "a": lambda: 2.00e5 * 0.0500 / (8.31 * (17 + 273)),
        "b": lambda: 2.00e5 * 0.0500 / (8.31 * (17 + 273)) * 6.02e23,
        "c": lambda: 1.5 * 1.38e-23 * (17 + 273),
        "d": lambda: sqrt(3 * 1.38e-23 * (17 + 273) / 6.64e-27),
        "e": lambda: 2.00e5 * 0.0500 / (8.31 * (17 + 273)) * 6.02e23 * 1.5 * 1.38e-23 * (17 + 273),
    },
    # alevel-calculation, quantum: A laser emits a parallel beam of light of wavelength 633 nm.
    "44de36c4a9c9531c": {
        "a": lambda: 6.63e-34 * 3.00e8 / 633e-9,
        "b": lambda: 1.5e-3 / (6.63e-34 * 3.00e8 / 633e-9),
        "c": lambda: 6.63e-34 / 633e-9,
        "d": lambda: 1.5e-3 / (6.63e-34 * 3.00e8 / 633e-9) * 6.63e-34 / 633e-9,
        "e": lambda: 2 * 1.5e-3 / (6.63e-34 * 3.00e8 / 633e-9) * 6.63e-34 / 633e-9,
    },
    # igcse-structured, mechanics: A skydiver jumps from a helicopter that is hovering high abo
    "f818ccf139b4a6c3": {
        "b": lambda: 80 * 9.8,
        "c": lambda: 80 * 9.8,
    },
    # igcse-structured, electricity: A student sets up a circuit containing a 12 V battery, a swi
    "dbcfbc2a7a96090c": {
        "b": lambda: 24 / 12,
        "c": lambda: 2 * 24 / 12,
        "d": lambda: 12 / (24 / 12),
    },
    # igcse-structured, materials: A student wants to find the density of a small stone with an
    "dca78fae5133729c": {
        "b": lambda: 75 / (70 - 40),
        "c": lambda: 75 / (70 - 40) * 1000,
        "d": lambda: 1000 * 9.8 * 1.5,
    },
    # igcse-calculation, electricity: A 6.0 Ω resistor and a 3.0 Ω resistor are connected in paral
    "1d16a08c3a04525f": {
        "a": lambda: 1 / (1 / 6.0 + 1 / 3.0),
        "b": lambda: 4.0 + 1 / (1 / 6.0 + 1 / 3.0),
        "c": lambda: 12 / (4.0 + 1 / (1 / 6.0 + 1 / 3.0)),
        "d": lambda: 12 / (4.0 + 1 / (1 / 6.0 + 1 / 3.0)) * 4.0,
        "e": lambda: (12 - 12 / (4.0 + 1 / (1 / 6.0 + 1 / 3.0)) * 4.0) / 6.0,
    },
    # igcse-calculation, waves: A ship uses an echo-sounder to find the depth of the sea. Th
    "000395196f7744df": {
        "b": lambda: 1500 / 40e3,
        "c": lambda: 1500 * 0.60 / 2,
    },
    # igcse-calculation, nuclear: A student places a detector near a radioactive source. The c
    "1742b7071707d230": {
        "a": lambda: 420 - 20,
        "b": lambda: (420 - 20) * 0.5 ** (15 / 5.0),
        "c": lambda: (420 - 20) * 0.5 ** (15 / 5.0) + 20,
        "d": lambda: 5.0 * log((420 - 20) / 25, 2),
    },
    # igcse-calculation, materials: In a hydraulic jack, a force of 150 N is applied to a small
    "7722a7dd7a972cfd": {
        "a": lambda: 150 / 5.0e-4,
        "b": lambda: 150 / 5.0e-4 * 250e-4,
        "c": lambda: 150 / 5.0e-4 * 250e-4 / 9.8,
    },
    # igcse-practical, thermal: A student investigates how hot water cools. She pours hot wa
    "c15caa9d1e0169f8": {
        "c": lambda: (80 - 53) / 4.0,
    },
    # igcse-practical, waves: A student finds the focal length f of a converging lens. She
    "b66376eed2ca2425": {
        "a:u = 20.0 cm": lambda: 20.0 * 60.9 / (20.0 + 60.9),
        "a:u = 25.0 cm": lambda: 25.0 * 37.1 / (25.0 + 37.1),
        "a:u = 30.0 cm": lambda: 30.0 * 30.3 / (30.0 + 30.3),
        "a:u = 40.0 cm": lambda: 40.0 * 23.8 / (40.0 + 23.8),
        "a:u = 50.0 cm": lambda: 50.0 * 21.6 / (50.0 + 21.6),
        "b": lambda: sum(u * v / (u + v) for u, v in [(20.0, 60.9), (25.0, 37.1), (30.0, 30.3), (40.0, 23.8), (50.0, 21.6)]) / 5,
    },
    # igcse-practical, mechanics: A student balances a metre rule on a pivot at its 50.0 cm ma
    "c4a84e0a827825e3": {
        "b": lambda: (20.0 - 4.0) / (30.0 - 6.0),
        "c": lambda: 1.0 / ((20.0 - 4.0) / (30.0 - 6.0)),
    },
}


def test_every_final_answer_recomputes():
    assert check_calculations("physics", RECOMPUTE) == 116
