from fleetlens.cli import main

raise SystemExit(main())
