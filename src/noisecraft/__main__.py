from noisecraft.cli.main import main

raise SystemExit(main())
