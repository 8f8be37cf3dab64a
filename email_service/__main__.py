"""`python -m email_service`: serve the email service with waitress."""

from email_service.app import create_app
from email_service.config import Config
from servicekit.logs import configure_logging
from servicekit.service import serve


def main() -> None:
    configure_logging("email_service")
    config = Config.from_env()
    serve(create_app(config), host=config.host, port=config.port, data_dir=config.data_dir)


if __name__ == "__main__":
    main()
