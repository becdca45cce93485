"""``python -m airtable_cached``: the airtable-cached CLI."""

from airtable_cached.ops.cli import main

if __name__ == "__main__":
    main(prog_name="airtable-cached")
