"""``python -m dramaturg.viewer --db FILE``: the viewer without the dramaturg CLI around it."""

import typer

from dramaturg.viewer._command import serve_command

if __name__ == "__main__":
    typer.run(serve_command)
