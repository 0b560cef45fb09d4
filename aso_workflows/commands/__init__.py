"""``aso`` sub-commands defined outside ``cli.py``; each module registers its commands on ``cli.app``."""
