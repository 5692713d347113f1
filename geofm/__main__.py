from geofm.cli import main

raise SystemExit(main())
