"""The guestbook's pages: the ORM on wsgipool's pool, the pool's figures on each page."""

import html

from django.http import HttpResponse, HttpResponseBadRequest, HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import wsgipool.django

from .models import Entry


def index(request):
    entries = Entry.objects.all()[:50]
    rows = "".join(
        f"<li><b>{html.escape(e.name)}</b>: {html.escape(e.message)}</li>" for e in entries)
    stats = wsgipool.django.stats().get("default", {})
    return HttpResponse(
        "<!doctype html><title>Guestbook</title><h1>Guestbook</h1>"
        '<form method="post" action="sign"><input name="name" placeholder="name">'
        '<input name="message" placeholder="message"><button>Sign</button></form>'
        f"<ul>{rows}</ul><p>This worker's pool: {stats.get('connects', 0)} connections "
        f"opened, {stats.get('checkouts', 0)} checkouts.</p>")


@csrf_exempt  # a demo form without a session; the admin keeps Django's CSRF checks
@require_POST
def sign(request):
    name, message = request.POST.get("name", "").strip(), request.POST.get("message", "").strip()
    if not name or not message or len(name) > 100 or len(message) > 1000:
        return HttpResponseBadRequest("name and message are required\n")
    Entry.objects.create(name=name, message=message)
    return HttpResponseRedirect("./")


def pool_stats(request):
    """This worker's pools, per alias (keep it away from the public in production)."""
    return JsonResponse(wsgipool.django.stats())
