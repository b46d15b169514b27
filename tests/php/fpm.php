<?php
// Laravel as PHP-FPM behind a web server runs it, as an oracle for the shield's classifier
// (tests/laravel_routes.rs): `php fpm.php APP_DIR` boots the application in APP_DIR (a copy of
// tests/php/app) once, then reads one request a line from stdin: the method, a TAB, and the
// raw request target in hex (so any byte can be sent). Each request goes through the app's HTTP
// kernel with the server variables nginx's fastcgi_params set when try_files hands a request
// to the front controller: REQUEST_URI is the raw target, SCRIPT_NAME is /index.php. For each
// it prints one line: the shield route class Laravel routed it to (or `-`), a TAB, and the
// bound `token` parameter in hex (or `-`).

declare(strict_types=1);

use App\Oracle;
use Illuminate\Contracts\Http\Kernel;
use Illuminate\Http\Request;

$dir = $argv[1] ?? '';
if ($dir === '' || !is_file($dir . '/bootstrap/app.php')) {
    fwrite(STDERR, "usage: php fpm.php APP_DIR\n");
    exit(2);
}
$app = require $dir . '/bootstrap/app.php';
$kernel = $app->make(Kernel::class);

while (($line = fgets(STDIN)) !== false) {
    $line = rtrim($line, "\n");
    [$method, $hex] = explode("\t", $line, 2) + [1 => ''];
    $target = (string) hex2bin($hex);
    $query = '';
    $q = strpos($target, '?');
    if ($q !== false) {
        $query = substr($target, $q + 1);
        $hash = strpos($query, '#');
        if ($hash !== false) {
            $query = substr($query, 0, $hash);
        }
    }
    $request = Request::create('http://localhost/', $method);
    parse_str($query, $parameters);
    $request->query->replace($parameters);
    // Request::create() rebuilds REQUEST_URI from a parsed URL; Laravel must be judged on the
    // raw target, so set the variables as the web server would.
    $request->server->add([
        'REQUEST_METHOD' => $method,
        'REQUEST_URI' => $target,
        'QUERY_STRING' => $query,
        'SCRIPT_NAME' => '/index.php',
        'DOCUMENT_URI' => '/index.php',
        'SCRIPT_FILENAME' => $dir . '/public/index.php',
        'DOCUMENT_ROOT' => $dir . '/public',
        'PHP_SELF' => '/index.php',
    ]);
    Oracle::reset();
    try {
        $response = $kernel->handle($request);
        $kernel->terminate($request, $response);
    } catch (\Throwable $e) {
        // The kernel renders every error itself; getting here means the oracle is broken.
        echo '!', str_replace(["\t", "\n"], ' ', get_class($e) . ': ' . $e->getMessage()), "\t-\n";
        continue;
    }
    if ($response->getStatusCode() >= 500) {
        echo '!', 'status ', $response->getStatusCode(), ' ', str_replace(["\t", "\n"], ' ', (string) $response->getContent()), "\t-\n";
        continue;
    }
    echo Oracle::$class ?? '-', "\t", Oracle::$token === null ? '-' : bin2hex(Oracle::$token), "\n";
}
