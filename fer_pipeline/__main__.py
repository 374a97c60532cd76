from fer_pipeline.cli import main

main()
