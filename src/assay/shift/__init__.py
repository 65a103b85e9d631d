"""Distribution shift: out-of-distribution detection and related measurements."""
