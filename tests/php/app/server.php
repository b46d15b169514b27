<?php

// What `php artisan serve` runs: `php -S host:port server.php` from the public folder. This is
// the Laravel skeleton's server.php (Laravel 9 and later ship the same logic as
// Illuminate/Foundation/resources/server.php, with getcwd() for the public folder).

$uri = urldecode(
    parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) ?? ''
);

// This file allows us to emulate Apache's "mod_rewrite" functionality from the built-in PHP
// web server.
if ($uri !== '/' && file_exists(__DIR__ . '/public' . $uri)) {
    return false;
}

require_once __DIR__ . '/public/index.php';
