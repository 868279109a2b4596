from halo_integrator.cli import main

main()
