from pyngress.cli import main

main()
