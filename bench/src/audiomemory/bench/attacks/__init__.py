"""The attack suite of issue 20: hostile callers against ``audiomemory up --models tiny``, plaintext and TLS + token.

Each attack runs while a well-behaved victim (another caller where the stack can tell callers apart) runs a
1-s job (tiny models, one step), and a probe polls the front door's health ``Check``. Per attack the suite
measures and judges: (a) the server's peak RSS (``VmHWM``, reset before the attack) grows at most 256 MB
beyond the decoded audio the attack's songs may legitimately hold; (b) the victim's job finishes, within
60 s; (c) health stays SERVING (and the server alive); (d) the attack got the statuses the controls promise,
and nothing it supplied ran (the file-borne attack's marker file does not exist).

The modules: ``stack`` (the attacked stack in a memory-capped child process, its RSS, the victim's job, the
health probe, ``Measure``), ``clients`` (hostile clients: gRPC jobs that stall or flood, ``NonReader``, a
caller that never reads), ``files`` (the file-borne attack) and ``suite`` (the attacks, the report and
``main``). ``scripts/reliability_attacks.py`` runs ``suite.main`` (``make reliability``; ``--quick`` is the
smoke version its test runs).
"""
