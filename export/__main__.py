from export.bundle_export import main

raise SystemExit(main())
