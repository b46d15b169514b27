<?php

declare(strict_types=1);

namespace App;

use Illuminate\Routing\Events\RouteMatched;

// What the router decided for the current request: the shield's route class (the first part
// of the route name) and the bound `token`, both null when no route matched. Recorded when the
// router fires RouteMatched, before any route middleware (a `signed` route still answers 403).
final class Oracle
{
    public static ?string $class = null;

    public static ?string $token = null;

    public static function reset(): void
    {
        self::$class = null;
        self::$token = null;
    }

    public static function record(RouteMatched $event): void
    {
        $name = $event->route->getName() ?? '';
        self::$class = explode('.', $name, 2)[0];
        $token = $event->route->parameter('token');
        self::$token = is_string($token) ? $token : null;
        if (PHP_SAPI === 'cli-server') {
            header('X-Oracle-Class: ' . self::$class);
            if (self::$token !== null) {
                header('X-Oracle-Token: ' . bin2hex(self::$token));
            }
        }
    }
}
