"""The simulation that `camfabric demo` and the tests use: a tabletop scene with tagged boxes
(`tabletop`, registered as the source kind "tabletop") and a tracker calibrated for it
(`tracker`). Production code imports nothing from here."""
