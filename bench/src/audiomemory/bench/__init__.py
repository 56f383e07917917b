"""Development tools over the whole pipeline (not in any service image): every benchmark's and reliability
script's code (``make bench-*``, ``make reliability``; scripts/ holds their thin entry points), and
``inprocess``, the four backends called in this process, the baseline that benchmarks and tests compare the
services with."""
