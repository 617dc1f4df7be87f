from arkhiv.cli import main

main()
