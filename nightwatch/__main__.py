from nightwatch.app.cli import main

raise SystemExit(main())
