"""Every final answer in the chemistry sample bank, recomputed from the question's own data.

Each lambda writes the numbers of the stem (and the Data Booklet or IGCSE
constants the question gives) into the calculation, so a slip in a gold answer,
a stem edited without its answer, or a wrongly rounded value fails here.
"""

import math

from tutor.testing import check_calculations

RECOMPUTE = {
    # alevel-mcq, energetics: Use the bond energies in the table to calculate the enthalpy change of
    "803001df5e1f70da": {
        None: lambda: (436 + 242) - 2 * 431,
    },
    # alevel-mcq, kinetics: The rate equation for the reaction between X and Y is
    "dc54c7443aa227e4": {
        None: lambda: 2 ** 1 * 2 ** 2,
    },
    # alevel-mcq, equilibria: Barium hydroxide, Ba(OH)₂, is a strong base that is fully dissociated
    "fe2d4dfa5530ab25": {
        None: lambda: -math.log10(1.00e-14 / (2 * 0.0100)),
    },
    # alevel-mcq, redox: Standard electrode potentials are given.
    "6767cdb4bab36ee7": {
        None: lambda: 1.36 - 0.77,
    },
    # alevel-mcq, organic: How many isomers, including stereoisomers, have the molecular formula
    "b9017ae811509a57": {
        None: lambda: 4 + 1,
    },
    # igcse-mcq, analysis: A mixture of dyes is separated by paper chromatography. One dye moves
    "08db24ce9ec912c5": {
        None: lambda: 3.6 / 8.0,
    },
    # alevel-structured, analysis: Compound Q contains carbon, hydrogen and oxygen only. Its relative mol
    "a7232c2da4704b33": {
        "a": lambda: 100 * 1.76 / (1.1 * 40.0),
    },
    # alevel-calculation, energetics: Propan-1-ol, C₃H₇OH, is a liquid fuel.
    "97a63b904752a577": {
        "c": lambda: 3 * -394 + 4 * -286 - (-2021),
        "d": lambda: -(200 * 4.18 * 14.5 / 1000) / (0.600 / (3 * 12.0 + 8 * 1.0 + 16.0)),
        "e": lambda: (200 * 4.18 * 14.5 / 1000) / (0.600 / (3 * 12.0 + 8 * 1.0 + 16.0)) / 2021 * 100,
    },
    # alevel-calculation, equilibria: Dinitrogen tetroxide dissociates reversibly into nitrogen dioxide.
    "7662822e8f05aa04": {
        "b:p(N₂O₄)": lambda: (0.500 - 0.150) / ((0.500 - 0.150) + 2 * 0.150) * 150,
        "b:p(NO₂)": lambda: 2 * 0.150 / ((0.500 - 0.150) + 2 * 0.150) * 150,
        "c": lambda: (2 * 0.150 / 0.650 * 150) ** 2 / ((0.500 - 0.150) / 0.650 * 150),
    },
    # alevel-calculation, kinetics: Propanone reacts with iodine in acidic solution. Hydrogen ions catalys
    "824d695e6a1dde36": {
        "c": lambda: 1.20e-5 / (0.200 * 0.100),
        "d": lambda: 1.20e-5 / (0.200 * 0.100) * 0.500 * 0.200,
    },
    # alevel-calculation, equilibria: Ethanoic acid, CH₃COOH, is a weak acid.
    "89f309ed2b56d15a": {
        "b": lambda: -math.log10(math.sqrt(1.74e-5 * 0.100)),
        "c": lambda: -math.log10(1.00e-14 / 0.0500),
        "d": lambda: -math.log10(1.74e-5 * 0.100 / 0.150),
    },
    # alevel-calculation, atomic-structure: A sample of magnesium was analysed in a mass spectrometer. The results
    "38d67263aa197887": {
        "b": lambda: (24 * 78.6 + 25 * 10.1 + 26 * 11.3) / 100,
        "d": lambda: 2 * 1.00 / (24.3 + 2 * 35.5) * 6.02e23,
        "e": lambda: 0.600 / 24.3 / 2 * 24.0,
    },
    # alevel-calculation, energetics: The table gives enthalpy changes for calcium, chlorine and calcium chl
    "57c17074c3174872": {
        "b": lambda: -796 - (178 + 590 + 1145 + 2 * 122 + 2 * -349),
        "c": lambda: -(-796 - (178 + 590 + 1145 + 2 * 122 + 2 * -349)) + -1577 + 2 * -378,
    },
    # alevel-calculation, redox: Iron tablets contain hydrated iron(II) sulfate, FeSO₄·7H₂O. Five table
    "5ea521466092ee8b": {
        "b": lambda: 0.0100 * 15.20 / 1000 * 5 * 250.0 / 25.0,
        "c": lambda: 0.0100 * 15.20 / 1000 * 5 * 250.0 / 25.0 * (55.8 + 32.1 + 4 * 16.0 + 7 * (2 * 1.0 + 16.0)) / 2.65 * 100,
        "d": lambda: 1.52 - 0.77,
    },
    # alevel-practical, energetics: A student plans to determine the enthalpy change, ΔH, for the reaction
    "04060b1d388dc258": {
        "a": lambda: 0.500 * 50.0 / 1000 * 65.4,
        "d": lambda: 43.8 + (5.0 - 3.5) * (43.8 - 39.8) / (10.0 - 5.0) - 21.0,
        "e": lambda: -(50.0 * 4.18 * 24.0) / (0.500 * 50.0 / 1000) / 1000,
        "g": lambda: 2 * 0.5 / 24.0 * 100,
    },
    # alevel-practical, kinetics: A student investigates how the rate of the reaction between sodium thi
    "5319dd193600d36c": {
        "d:50.0 cm³": lambda: 1 / 21,
        "d:40.0 cm³": lambda: 1 / 26,
        "d:30.0 cm³": lambda: 1 / 41,
        "d:20.0 cm³": lambda: 1 / 53,
        "d:10.0 cm³": lambda: 1 / 105,
        "g": lambda: 1 / 21 * 100,
    },
    # alevel-practical, analysis: A student is given a sample of hydrated sodium carbonate, Na₂CO₃·xH₂O,
    "6c3e0c206a4c2298": {
        "b": lambda: ((25.60 - 0.50) + (26.00 - 1.00) + (25.25 - 0.20)) / 3,
        "c:Mr": lambda: 3.58 / (0.100 * ((25.60 - 0.50) + (26.00 - 1.00) + (25.25 - 0.20)) / 3 / 1000 / 2 * 250.0 / 25.0),
        "c:x": lambda: (3.58 / (0.100 * ((25.60 - 0.50) + (26.00 - 1.00) + (25.25 - 0.20)) / 3 / 1000 / 2 * 250.0 / 25.0)
                        - (2 * 23.0 + 12.0 + 3 * 16.0)) / (2 * 1.0 + 16.0),
        "e": lambda: 2 * 0.05 / 25.05 * 100,
    },
    # alevel-practical, equilibria: A student determines the equilibrium constant, Kc, for the formation o
    "ea884bcf1c9b3e3f": {
        "c": lambda: 0.200 * (24.05 - 2.50) / 1000 * 250.0 / 25.0,
        "d": lambda: ((0.200 - 0.200 * (24.05 - 2.50) / 1000 * 10) ** 2
                      / (0.200 * (24.05 - 2.50) / 1000 * 10 * (0.300 - (0.200 - 0.200 * (24.05 - 2.50) / 1000 * 10)))),
    },
    # igcse-structured, atomic-structure: The table shows the numbers of protons, neutrons and electrons in six
    "d3d0686581ce4293": {
        "d": lambda: 18 + 22,
        "f": lambda: (75 * 35 + 25 * 37) / 100,
    },
    # igcse-structured, energetics: Methane burns in oxygen.
    "6dcfe043e9b170b2": {
        "b": lambda: 4 * 412 + 2 * 496,
        "c": lambda: 2 * 805 + 4 * 463,
        "d": lambda: (4 * 412 + 2 * 496) - (2 * 805 + 4 * 463),
    },
    # igcse-calculation, inorganic: A student makes sodium chloride by reacting 5.30 g of sodium carbonate
    "583d1b73feeb2c57": {
        "a": lambda: 2 * 23 + 12 + 3 * 16,
        "b": lambda: 5.30 / (2 * 23 + 12 + 3 * 16),
        "c": lambda: 2 * 5.30 / (2 * 23 + 12 + 3 * 16) * (23 + 35.5),
        "d": lambda: 5.12 / (2 * 5.30 / (2 * 23 + 12 + 3 * 16) * (23 + 35.5)) * 100,
        "e": lambda: 5.30 / (2 * 23 + 12 + 3 * 16) * 24,
    },
    # igcse-calculation, analysis: A student titrates 25.0 cm³ of dilute hydrochloric acid with 0.200 mol
    "072b76abb4a7f4f9": {
        "a": lambda: 0.200 * 18.60 / 1000,
        "b": lambda: 0.200 * 18.60 / 1000,
        "c": lambda: 0.200 * 18.60 / 1000 / (25.0 / 1000),
        "d": lambda: 0.200 * 18.60 / 1000 / (25.0 / 1000) * (1 + 35.5),
        "e": lambda: 0.300 * 30.0 / 1000 / 0.200 * 1000,
    },
    # igcse-calculation, analysis: A hydrocarbon, X, contains 85.7% carbon by mass. The relative molecula
    "3b9f52507bffbda3": {
        "a": lambda: 100 - 85.7,
        "d": lambda: 2.80 / (4 * 12 + 8 * 1) * 4 * 24,
    },
    # igcse-calculation, energetics: A student uses a spirit burner containing ethanol, C₂H₅OH, to heat 200
    "dba60aa7ec6bce70": {
        "a": lambda: 41.5 - 20.0,
        "b": lambda: 200 * 4.2 * (41.5 - 20.0),
        "c": lambda: 0.920 / (2 * 12 + 6 * 1 + 16),
        "d": lambda: -(200 * 4.2 * (41.5 - 20.0) / 1000) / (0.920 / (2 * 12 + 6 * 1 + 16)),
    },
    # igcse-calculation, redox: The thermite reaction between aluminium and iron(III) oxide is used to
    "b8e3a5da3b6f24b4": {
        "b": lambda: 2 * 56 + 3 * 16,
        "d": lambda: 2 * 8.00 / (2 * 56 + 3 * 16) * 56,
        "e": lambda: 4.48 / (2 * 8.00 / (2 * 56 + 3 * 16) * 56) * 100,
    },
    # igcse-calculation, equilibria: Ammonia is made by the Haber process.
    "14581d1983793183": {
        "b": lambda: 2 * 30,
        "c": lambda: 2 * 0.20 * 30,
        "d": lambda: (30 - 0.20 * 30) + (90 - 3 * 0.20 * 30) + 2 * 0.20 * 30,
        "e": lambda: 2 * 0.20 * 30 / 24 * (14 + 3 * 1),
    },
    # igcse-calculation, kinetics: A student adds 0.12 g of magnesium ribbon to 50.0 cm³ of 0.50 mol/dm³
    "690b0a65b8fb68cd": {
        "a": lambda: 0.12 / 24,
        "b": lambda: 0.50 * 50.0 / 1000,
        "c": lambda: 0.12 / 24 * 24 * 1000,
        "d": lambda: 48 / 20,
    },
    # igcse-practical, kinetics: A student investigates the rate of reaction between 0.30 g of marble c
    "f6a8d1d2ac33b1d8": {
        "b(ii)": lambda: 45 / 60,
    },
    # igcse-practical, energetics: A student finds the concentration of a solution of sodium hydroxide by
    "31e8f8e0c754ec72": {
        "d:volume": lambda: (31.7 - 20.0 * (27.7 - 31.7) / 20.0 - 21.0) / ((30.6 - 21.0) / 15.0 - (27.7 - 31.7) / 20.0),
        "d:temperature": lambda: (21.0 + (30.6 - 21.0) / 15.0 * (31.7 - 20.0 * (27.7 - 31.7) / 20.0 - 21.0)
                                  / ((30.6 - 21.0) / 15.0 - (27.7 - 31.7) / 20.0)),
        "e": lambda: 2.00 * 17.5 / 1000 / (25.0 / 1000),
    },
    # igcse-practical, analysis: A student uses paper chromatography to find out which dyes are in a fo
    "4adc17cd3838533e": {
        "e": lambda: 7.0 / 10.0,
    },
}


def test_every_final_answer_is_recomputed():
    assert check_calculations("chemistry", RECOMPUTE) == 79
