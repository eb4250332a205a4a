"""Where repository code runs: one bubblewrap sandbox for strategy checks, strategy tests,
metrics commands and the gauntlet worker (``runner``), and the narrow channel through
which their results come back (``channel``). Nothing here imports the rest of reconciler
beyond ``errors``, so every layer that starts repository code can use it.
"""
