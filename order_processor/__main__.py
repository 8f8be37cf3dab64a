"""`python -m order_processor`: serve the order processor with waitress."""

from order_processor.app import create_app
from order_processor.config import Config
from servicekit.logs import configure_logging
from servicekit.service import serve


def main() -> None:
    configure_logging("order_processor")
    config = Config.from_env()
    serve(create_app(config), host=config.host, port=config.port, data_dir=config.data_dir)


if __name__ == "__main__":
    main()
