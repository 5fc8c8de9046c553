from atomicplug.cli import main

raise SystemExit(main())
