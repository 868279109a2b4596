from halo_integrator.cli import main

if __name__ == "__main__":  # parse workers may import this module again: never run the CLI twice
    main()
