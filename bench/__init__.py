"""Load and micro benchmarks of ztauthz against baselines (``make bench``; see README.md)."""
