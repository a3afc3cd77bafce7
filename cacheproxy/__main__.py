from cacheproxy.cli.main import main

if __name__ == "__main__":  # a process that imports it again (a spawned worker) must not serve
    main()
