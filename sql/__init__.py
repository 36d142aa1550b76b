"""The SQL files of fleetlens (a package only so that they install with it)."""
