"""`python -m publisher --count N`: see publisher.cli for options and settings."""

from publisher.cli import run

if __name__ == "__main__":
    run()
