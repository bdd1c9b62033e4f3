from pricing_store.cli import main

main()
