from django.urls import include, path

from django_site import views
from wsgipool.django.views import stats

urlpatterns = [
    path("t/<str:alias>/<str:action>", views.action),
    path("_stats", stats),
    path("", include("mysite.urls")),
]
