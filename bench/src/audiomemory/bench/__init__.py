"""Development tools over the whole pipeline (not in any service image): ``inprocess``, the
four backends called in this process, the baseline that benchmarks and tests compare the services with."""
