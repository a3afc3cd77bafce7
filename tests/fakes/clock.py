"""A clock the tests move by hand, injected into the proxy with create_app(config, clock)."""


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
