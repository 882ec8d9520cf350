from atomfleet.cli import main

main()
