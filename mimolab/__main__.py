from mimolab.cli import main

raise SystemExit(main())
