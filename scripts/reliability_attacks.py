"""The attack suite of issue 20 (``make reliability``): ``audiomemory.bench.attacks.suite`` says what it does.

``python scripts/reliability_attacks.py --quick`` is the smoke version. Prints one line per attack and a last
JSON line; exits 1 when any criterion fails.
"""

from audiomemory.bench.attacks.suite import main

if __name__ == "__main__":
    main()
