"""`python -m service` runs the same command line as the `cardvault` script."""

from service.cli import main

if __name__ == "__main__":
    main()
