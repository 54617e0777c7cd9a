#!/usr/bin/env python
"""Django sample app for `tlsfront doctor` tests.

    FIXED=0|1 PORT=5002 python manage.py runserver 127.0.0.1:5002 --noreload

(equivalently: `python -m django runserver ... --settings=doctor_site.settings`
with this directory on PYTHONPATH). See doctor_site/settings.py.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "doctor_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
