from fedtally.cli import main

raise SystemExit(main())
