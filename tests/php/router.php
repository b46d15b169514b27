<?php
// Laravel's own router as an oracle for the shield's classifier (tests/laravel_routes.rs).
//
// Registers the shield's four default route classes as Laravel routes (`*` becomes a
// placeholder, `**` becomes `{any}` with `where('any', '.*')`), then reads one request a line
// from stdin: the method, a TAB, and the raw request target in hex (so any byte can be sent).
// For each it prints one line: the matched route name (or `-`), a TAB, and the bound `token`
// parameter in hex (or `-`). The request is built the way PHP-FPM behind a web server hands it
// to public/index.php: REQUEST_URI is the raw target and /index.php is the front controller.

declare(strict_types=1);

require_once 'Illuminate/autoload.php';

use Illuminate\Container\Container;
use Illuminate\Events\Dispatcher;
use Illuminate\Http\Request;
use Illuminate\Routing\Router;
use Symfony\Component\HttpKernel\Exception\HttpException;

$router = new Router(new Dispatcher(), new Container());
$ok = function () {
    return 'ok';
};
$routes = [
    ['gallery_download', null, [
        '/api/v1/gallery/{token}/download',
        '/api/v1/gallery/{token}/photos/*/download',
        '/api/v1/events/{token}/photos/*/download',
        '/gallery/{token}/download',
    ]],
    ['upload', ['POST', 'PUT'], [
        '/api/v1/events/{token}/upload',
        '/api/v1/events/{token}/photos',
    ]],
    ['events', null, ['/api/v1/events/{token}', '/api/v1/events/{token}/**']],
    ['gallery', null, [
        '/api/v1/gallery/{token}',
        '/api/v1/gallery/{token}/**',
        '/gallery/{token}',
        '/gallery/{token}/**',
    ]],
];
foreach ($routes as [$name, $methods, $paths]) {
    foreach ($paths as $path) {
        $n = 0;
        $uri = implode('/', array_map(function (string $seg) use (&$n): string {
            if ($seg === '**') {
                return '{any}';
            }
            if ($seg === '*') {
                return '{seg' . $n++ . '}';
            }
            return $seg;
        }, explode('/', $path)));
        $route = $methods === null ? $router->any($uri, $ok) : $router->match($methods, $uri, $ok);
        if (str_ends_with($path, '/**')) {
            $route->where('any', '.*');
        }
        $route->name($name);
    }
}
$collection = $router->getRoutes();

while (($line = fgets(STDIN)) !== false) {
    $line = rtrim($line, "\n");
    [$method, $hex] = explode("\t", $line, 2) + [1 => ''];
    $target = (string) hex2bin($hex);
    $request = Request::create('http://localhost/', $method);
    // Request::create() rebuilds REQUEST_URI from a parsed URL; the shield must be judged
    // against the raw target, so set the server variables a web server would set.
    $request->server->add([
        'REQUEST_METHOD' => $method,
        'REQUEST_URI' => $target,
        'SCRIPT_NAME' => '/index.php',
        'SCRIPT_FILENAME' => '/var/www/app/public/index.php',
        'PHP_SELF' => '/index.php',
    ]);
    $name = '-';
    $token = '-';
    try {
        $route = $collection->match($request);
        $name = $route->getName() ?? '-';
        $bound = $route->bind($request)->parameter('token');
        if (is_string($bound)) {
            $token = bin2hex($bound);
        }
    } catch (HttpException $e) {
        // NotFound and MethodNotAllowed: not routed.
    } catch (\Throwable $e) {
        $name = '!' . str_replace(["\t", "\n"], ' ', get_class($e) . ': ' . $e->getMessage());
    }
    echo $name, "\t", $token, "\n";
}
