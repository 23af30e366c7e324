"""Framework adapters: Flask / WSGI, Starlette / FastAPI / ASGI and AWS Lambda."""
