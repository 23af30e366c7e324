"""``POST /webhooks/fluxbase`` (with or without the trailing slash) runs the receiver's
handlers. The view is async: under an ASGI server it runs on the event loop, under a WSGI
server Django runs it per request."""

from fluxbase_receiver.adapters.django import webhook_urls

from .webhooks import receiver

urlpatterns = [*webhook_urls("webhooks/fluxbase", receiver, asynchronous=True)]
