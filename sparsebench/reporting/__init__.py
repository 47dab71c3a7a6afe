"""Reporting: a sweep's run folders turned into data, tables and figures.

``results`` reads every run folder of a sweep into one pandas row per run (``summary.csv``);
``cells`` says which runs a table averages and which cells it compares; ``statistics`` how
sure each comparison is (t-intervals, Welch with Holm, power, ranks; scipy, statsmodels and
scikit-posthocs, imported here only, never by training); ``tables``, ``comparisons`` and
``figures`` make the report's tables and figures from those rows; ``text`` spells a table's
numbers in Markdown, LaTeX and CSV text; ``plotting``
is the one plotting kit and palette every figure (the paper's too) is drawn with; ``spread``
says how sure a benchmark number is (spreads of repeated ratios and fitted slopes).

May import storage (run files), config, training (the result header of a run still
training) and methods (a method's parameter defaults, for runs written before a parameter
existed); never launch. Imported by the ``report`` command and by :mod:`sparsebench.paper`.
"""
