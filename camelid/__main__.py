from camelid.cli import main

raise SystemExit(main())
