from cacheproxy.cli import main

main()
