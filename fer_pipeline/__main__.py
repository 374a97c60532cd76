"""`python -m fer_pipeline`: the same CLI as `fer-pipeline`."""

from fer_pipeline.cli import main

main()
