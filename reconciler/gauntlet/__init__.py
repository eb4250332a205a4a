"""Gauntlets: the gate a model passes before its pointer flips. Everything in this package
that imports torch runs in a gauntlet subprocess, never in the daemon."""
