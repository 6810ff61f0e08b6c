"""The WSGI app gunicorn serves: ``gunicorn -c gunicorn.conf.py mysite.wsgi``."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
