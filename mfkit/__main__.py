from mfkit.cli import main

main()
