"""``python -m tests.server.fake_server serve ...``: the real CLI with the fake pipelines, for
tests that need a server in its own process (to kill it mid-job)."""
import sys

from server.cli import main
from tests.server import fake_pipeline

if __name__ == "__main__":
    fake_pipeline.install()
    sys.exit(main(sys.argv[1:]))
