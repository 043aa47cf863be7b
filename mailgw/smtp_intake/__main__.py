"""``python -m mailgw.smtp_intake`` (the ``mailgw-smtp`` console script)."""

from mailgw.smtp_intake.main import main

raise SystemExit(main())
