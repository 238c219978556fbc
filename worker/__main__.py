from flowworker.cli.app import main

main()
