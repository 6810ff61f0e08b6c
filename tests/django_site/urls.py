from django.urls import include, path

from django_site import views

urlpatterns = [
    path("t/<str:alias>/<str:action>", views.action),
    path("", include("mysite.urls")),
]
