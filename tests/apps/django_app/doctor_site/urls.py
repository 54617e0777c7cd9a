"""Views of the Django sample app (GET unless noted):

    /            sets a session value (sessionid cookie) and returns HTML with
                 request.build_absolute_uri('/dashboard/')
    /login/      form with {% csrf_token %} (csrftoken cookie); POST: alice /
                 wonderland, then redirect to /dashboard/
    /go/         HttpResponseRedirect(request.build_absolute_uri('/dashboard/'))
    /dashboard/  who is logged in, and the page's absolute URL
    /healthz/    "ok"
"""

import hmac

from django.http import HttpResponse, HttpResponseRedirect
from django.template import engines
from django.urls import path

USERS = {"alice": "wonderland"}

_django = engines["django"]

INDEX = _django.from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Home</title></head>
<body><h1>Home</h1>
<p><a id="dashboard" href="{{ dashboard_url }}">Dashboard</a></p>
</body></html>
"""
)

LOGIN = _django.from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Log in</title></head>
<body><h1>Log in</h1>
{% if error %}<p id="error">{{ error }}</p>{% endif %}
<form method="post" action="/login/">
  {% csrf_token %}
  <p><label>Username <input name="username"></label></p>
  <p><label>Password <input name="password" type="password"></label></p>
  <p><button type="submit">Log in</button></p>
</form>
</body></html>
"""
)

DASHBOARD = _django.from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Dashboard</title></head>
<body><h1 id="dashboard">Dashboard</h1>
<p>User: <span id="user">{{ user|default:"(anonymous)" }}</span></p>
<p>This page: <code id="url">{{ url }}</code></p>
</body></html>
"""
)


def index(request):
    if "visited" not in request.session:  # modify the session only once
        request.session["visited"] = True
    return HttpResponse(
        INDEX.render({"dashboard_url": request.build_absolute_uri("/dashboard/")}, request)
    )


def login(request):
    if request.method == "POST":
        username = request.POST.get("username", "")
        password = request.POST.get("password", "")
        expected = USERS.get(username)
        if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
            request.session.cycle_key()
            request.session["user"] = username
            return HttpResponseRedirect("/dashboard/")
        return HttpResponse(
            LOGIN.render({"error": "Invalid username or password."}, request), status=401
        )
    return HttpResponse(LOGIN.render({"error": None}, request))


def go(request):
    return HttpResponseRedirect(request.build_absolute_uri("/dashboard/"))


def dashboard(request):
    return HttpResponse(
        DASHBOARD.render(
            {"user": request.session.get("user"), "url": request.build_absolute_uri()}, request
        )
    )


def healthz(request):
    return HttpResponse("ok", content_type="text/plain; charset=utf-8")


urlpatterns = [
    path("", index),
    path("login/", login),
    path("go/", go),
    path("dashboard/", dashboard),
    path("healthz/", healthz),
]
